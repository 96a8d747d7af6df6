"""The application layer: between the pure core (:mod:`drossel.core`) and the adapters (milter,
gateway, web, CLI, notifications).

It holds the enforcement state machine over stored server records, the services that change
state (pauses, overrides, tokens, tenants, connectors) with typed errors, and the storage
interface the SQL store implements.  Adapters call this layer; they hold no rules of their own.
"""
