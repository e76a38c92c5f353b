"""AutoML: Neural Optimizer Search (update rules written by a controller from a grammar of primitives, PowerSign,
AddSign, linear cosine decay) and the search machinery it shares with architecture search.

Subpackages by stage: `tasks/` (the small training problems rules and optimizers are judged on), `search/`
(random search, regularized evolution, the RNN controller, the durable store of evaluated candidates and the
pool of evaluation jobs). Modules: `grammar` (rules as text and as tokens), `interpreter` (a rule as an optax
transformation, one compiled program for every rule), `trainer` (many small runs side by side), `optimizers` and
`schedules` (PowerSign, AddSign, sign decay, linear cosine decay: for anyone's optax code).
"""
