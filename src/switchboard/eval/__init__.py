"""Offline evaluation of routers on prompts whose per-model outcomes (score, cost) are known.

The package needs numpy (the ``routing`` extra); the cost–quality plot needs matplotlib (the ``train`` extra).

Usage::

    from switchboard.eval.dataset import load_outcomes
    from switchboard.eval.report import evaluate_all, format_table

    test = load_outcomes(["data/*_test.csv"])
    print(format_table(evaluate_all(test, train=None, router=None)))
"""
