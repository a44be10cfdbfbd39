"""A private Redis Cluster (masters, each with replicas) on free ports, built with
CLUSTER commands (no redis-cli needed); nodes may be killed, frozen and restarted."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, redis_binary
from tests.support.timing import scaled

SLOTS = 16384
NODE_TIMEOUT_MS = 2000


def redis_version() -> tuple[int, ...]:
    import subprocess

    out = subprocess.run(
        [redis_binary(), "--version"], check=True, capture_output=True, text=True
    ).stdout
    version = next(w for w in out.split() if w.startswith("v=")).removeprefix("v=")
    return tuple(int(p) for p in version.split("."))


def low_free_port() -> int:
    """A free port Redis accepts in cluster mode (at most 55535)."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


class RedisCluster:
    """`masters` shards of one master and `replicas` replicas each."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.workdir = workdir
        self.nodes: list[RedisServer] = []
        self.bus_ports: dict[int, int] = {}  # node port -> its cluster bus port
        for i in range(masters * (1 + replicas)):
            node_dir = workdir / f"node{i}"
            port = low_free_port()
            # Its own bus port: the default, port + 10000, may be taken.
            bus = self.bus_ports[port] = low_free_port()
            self.nodes.append(
                RedisServer(
                    node_dir,
                    port,
                    extra=(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        str(bus),
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        str(NODE_TIMEOUT_MS),
                        # A replica takes over however long it was cut off from its master.
                        "--cluster-replica-validity-factor",
                        "0",
                        "--cluster-allow-reads-when-down",
                        "no",
                    ),
                )
            )
        self.masters = masters
        self.replicas = replicas

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters]]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        masters = self.nodes[: self.masters]
        per = SLOTS // self.masters
        for i, node in enumerate(masters):
            client = node.client()
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        first = self.nodes[0].client()
        for node in self.nodes[1:]:
            first.execute_command(
                "CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[node.port]
            )
        self._until(lambda: all(len(self._known(n)) == len(self.nodes) for n in self.nodes))
        for i, node in enumerate(self.nodes[self.masters :]):
            master = masters[i % self.masters]
            node.client().execute_command("CLUSTER", "REPLICATE", self.node_id(master))
        self._until(self.healthy)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.resume()
                except ProcessLookupError:
                    pass
            node.kill()

    # -- what the cluster looks like ------------------------------------------------

    @staticmethod
    def node_id(node: RedisServer) -> str:
        return node.client().execute_command("CLUSTER", "MYID").decode()

    @staticmethod
    def _known(node: RedisServer) -> list[str]:
        text = node.client().execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        return [line for line in text.splitlines() if line.strip()]

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None]

    def healthy(self) -> bool:
        """Every live node sees every slot served and every live replica in sync."""
        try:
            for node in self.alive():
                client = node.client()
                info = client.execute_command("CLUSTER", "INFO")
                info = info.decode() if isinstance(info, bytes) else info
                if "cluster_state:ok" not in info:
                    return False
                role = client.execute_command("ROLE")
                if role[0] == b"slave" and role[3] != b"connected":
                    return False
            # Every master's replicas are in the slot map the nodes hand out.
            for node in self.alive():
                slots = node.client().execute_command("CLUSTER", "SLOTS")
                if any(len(r) - 3 < self.replicas for r in slots):
                    return False
            return len(self.owners()) == self.masters
        except redis.RedisError:
            return False

    def owners(self) -> dict[int, RedisServer]:
        """The node serving each slot range, by its first slot (as a live node sees it)."""
        by_port = {n.port: n for n in self.nodes}
        for node in self.alive():
            try:
                slots = node.client().execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            return {int(r[0]): by_port[int(r[2][1])] for r in slots}
        return {}

    def master_of(self, key: str) -> RedisServer:
        slot = key_slot(key.encode())
        for node in self.alive():
            try:
                slots = node.client().execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in slots:
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no node serves slot {slot}")

    def wait_master_of(self, key: str, not_this: RedisServer) -> RedisServer:
        """Wait for another node to take over `key`'s slot; that node."""
        found: list[RedisServer] = []

        def promoted() -> bool:
            try:
                owner = self.master_of(key)
            except RuntimeError:
                return False
            if owner is not_this:
                return False
            role = owner.client().execute_command("ROLE")
            found[:] = [owner]
            return role[0] == b"master"

        self._until(promoted, scaled(30))
        return found[0]

    @staticmethod
    def _until(condition, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or scaled(30))
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not get there in time")
            time.sleep(0.05)  # polling a cluster forming: no event to wait on
