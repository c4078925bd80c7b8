"""Lua scripts shared by the worker's owner-held keys (idempotency claims, leases)."""

from __future__ import annotations

RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Delete KEYS[1] only while it still holds ARGV[1], so nobody frees a key another owner took over."""

RELEASE_IF_OWNER_FENCED = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""`RELEASE_IF_OWNER`, and only while the lease KEYS[2] holds the fence ARGV[2] ('' = unfenced); -1 when fenced."""
