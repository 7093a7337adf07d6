"""The operator dashboard: a static page at ``/dashboard`` and the read-only JSON API it draws from.

Usage::

    dashboard = Dashboard(config, gateway.breakers, records)
    response = await dashboard.handle("GET", "/dashboard/api/summary", "since=1h", headers)
"""

from switchboard.dashboard.api import Dashboard, Response

__all__ = ["Dashboard", "Response"]
