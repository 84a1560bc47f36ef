"""The experiment layer: what a run is made of, checked before any training.

The config and its schema (:mod:`.config`, :mod:`.merge`, :mod:`.run_config`,
:mod:`.schema`, :mod:`.ranges`, :mod:`.strategy_options`), data and
partitions (:mod:`.data`, :mod:`.local_data`), models (:mod:`.models`), and
the preparation of an experiment from a config (:mod:`.prepare`).
"""
