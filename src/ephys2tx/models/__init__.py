"""Models: the Gouwens replication, baselines, the family BiLSTM and transfer models."""
