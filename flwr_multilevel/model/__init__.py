"""The network model of MLL-SGD, pure: numpy and networkx, no Flower, no torch.

Hubs and workers (:mod:`.hierarchy`), operating rates and the step schedule
(:mod:`.rates`), hub graphs (:mod:`.topology`), mixing matrices
(:mod:`.mixing`), the virtual clock (:mod:`.clock`) and Theorem 1's
quantities (:mod:`.theory`).
"""
