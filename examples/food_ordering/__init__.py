"""The article's food-ordering app: `place-order` publishes `order_placed`, `notify-user` consumes it.

v2 of `place-order` adds `delivery_eta` to the event and v2 of `notify-user`
needs it: a chain that mixes versions fails, which is the point.
"""
