"""The rooms of ``mova ask`` (``commands/ask.py`` is only its Click surface).

Read them in the order a run goes through them:

- ``options.py``: ``AskOptions``, the frozen options of one run; every usage error is decided there.
- ``outputs.py``: the output set: which files this process owns, reads, tidies, appends to and merges,
  and the run manifest beside them.
- ``planning.py``: ``plan(options, ...) -> RunPlan``: prompts x inputs -> jobs, what is already done,
  this process's share; ``--dry-run``'s report.
- ``execute.py``: the model seam (``open_model`` -> ``ModelSession`` holding an ``AnswerEngine``) and
  ``execute(plan, session, ...)``, which turns jobs into requests and results into records.
- ``run.py``: ``run_ask(options)``: the order of it all, the one place a run's outcome is formed.
"""
