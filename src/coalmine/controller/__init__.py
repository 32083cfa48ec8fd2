"""The control plane's services and the rollout loop.

`ControlPlane` (``coalmine.controller.plane``) bundles one service per
concern over the store; `Controller` (``coalmine.controller.loop``) drives
every release through its strategy, with the judge, alarms and hooks. Import
from the modules themselves: this package re-exports nothing, so importing
it stays cheap and free of cycles.
"""
