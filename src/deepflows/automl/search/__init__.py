"""Searches over candidates (update rules here; architectures next): proposers (random search, regularized
evolution, an RNN controller trained by REINFORCE), the child task that scores a rule, a durable cache of scored
candidates, a pool of evaluation jobs (processes or Slurm), and the resumable driver that joins them."""
