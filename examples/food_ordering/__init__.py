"""The article's food-ordering app, run end to end by `coalmine demo`.

``place-order`` (HTTP, through the gateway) takes the order from the request
body, has ``kitchen`` accept it (HTTP through the gateway, carrying the
routing context) and publishes ``order_placed`` to a stream with the context;
``notify-user`` consumes it, each record with its own chain's version
(`coalmine.sdk.dispatch`).

v2 of ``place-order`` adds ``delivery_eta`` to the event and v2 of
``notify-user`` needs it: a chain that mixes versions fails, which is the
article's point. v3 of ``place-order`` answers as v2 but is slower at the
tail (p99 about twice v2's, the median unchanged).
"""
