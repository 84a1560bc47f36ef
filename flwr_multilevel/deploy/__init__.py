"""Deployment: every hub its own Flower SuperLink and ServerApp.

Processes (:mod:`.processes`, :mod:`.flower_processes`, :mod:`.flower_files`,
:mod:`.federation`), certificates (:mod:`.certs`), the hub app
(:mod:`.hub_app`, the Flower App in ``app/``) and the local ``deploy`` runner
(:mod:`.runner`).
"""
