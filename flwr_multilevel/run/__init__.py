"""The run core: one recorder of a run, used by every path that records one.

Clock and counters, the history and rounds schema, checkpoint and resume,
the evaluation schedule, the summary and the plots.
"""
