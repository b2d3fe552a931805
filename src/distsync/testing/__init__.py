"""Test support shipped with distsync.

:mod:`distsync.testing.sim` is the deterministic Raft cluster simulator: users building
on the Raft core can run it against their own changes. It needs only the standard
library and :mod:`distsync.raft`.
"""
