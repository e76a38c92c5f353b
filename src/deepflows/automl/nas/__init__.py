"""Architecture search over NAS-Bench-201's cell space: the cells (`cells`), the controlled comparison of search
algorithms on NAS-Bench-201's tables (`tabular`, `comparison`), and the live search that trains every child
(`cellnet` and `child`: the network and its training on digits; `store`: the durable population; `live`: the
asynchronous controller; `cli`, `report`: the commands)."""
