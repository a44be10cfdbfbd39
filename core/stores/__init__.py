"""Shared state behind small interfaces, one file per interface and backend.

`memory` keeps everything in this process; `redis` shares it between instances and
falls back to the memory implementation while Redis is unreachable.
"""
