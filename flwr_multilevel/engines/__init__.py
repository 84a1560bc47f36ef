"""The engines that run an experiment's workers.

Flower's simulation engine on Ray (:mod:`.simulation`, :mod:`.dispatch`,
:mod:`.ray_groups`), the in-process grid (:mod:`.local_grid`) and the batched
engine (:mod:`.batched`: draws, core and hub rules in :mod:`.batched_draws`,
:mod:`.batched_mllsgd`, :mod:`.batched_hubs`). What each backend runs, and
refuses, is one table: :mod:`.support`.
"""
