"""MLL-SGD (Castiglia et al., ICLR 2021) as a Flower baseline, built on flwr-multilevel."""
