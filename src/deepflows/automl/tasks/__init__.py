"""The small training problems that update rules and optimizers are judged on (the task contract is in
deepflows.automl.trainer)."""
