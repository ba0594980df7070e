"""The Account Manager contract suite: one set of scenarios, every broker.

Each module's scenarios run once per broker rig (``rigs.py``: paper, the IG simulator,
the fake TWS behind the real ib_insync, the QuickFIX acceptor, the local Kite Connect behind
the real kiteconnect), through the real engine:
``maotrade start`` in a subprocess with one account on that broker, a bus client as the
strategy (``trader.py``). A scenario checks three records: what the strategy was told,
the journal (``orders_request``), and the broker's own record (``rig.order``,
``rig.position``, ``rig.times_received``).

A scenario that needs the broker side to do something (move its price, fill part of an
order, go down, restart, repeat a fill, send garbage) asks ``require(rig, CAPABILITY)``
and is skipped, with the capability and why it is missing, where the rig cannot.

Run: ``python -m pytest tests/contract -q`` (``-k ib`` for one broker).
"""
