"""An in-process Grid: the coordinator talks to ClientApps directly, no Ray, no gRPC.

It records every message in both directions and can drop nodes (unreachable
sites) or fail on purpose after N replies (a killed coordinator).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        node_configs: dict[int, dict],
        run_config: dict,
        unreachable: set[int] = frozenset(),
        late: set[int] = frozenset(),
    ):
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
        self.client_app = client_app
        self.node_configs = node_configs
        self.run_config = run_config
        self.unreachable = set(unreachable)
        self.late = set(late)  # answer, but only after send_and_receive gave up
        self.held: dict[str, Message] = {}  # request id → a late reply
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._ids = itertools.count(1)

    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(
            content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            group_id=group_id,
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_configs)

    def get_nodes(self):
        return []

    def push_messages(self, messages):
        raise NotImplementedError("tests use send_and_receive")

    def pull_messages(self, message_ids):
        """Late replies to the given requests, as the SuperLink would keep them."""
        return [self.held.pop(i) for i in list(message_ids) if i in self.held]

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"  # as pushed
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.unreachable:
                continue
            ctx = Context(
                run_id=1,
                node_id=node,
                node_config=self.node_configs[node],
                state=RecordDict(),
                run_config=self.run_config,
            )
            try:
                reply = self.client_app(msg, ctx)
            except (
                Exception
            ) as exc:  # a ClientApp exception becomes an error reply, as in Flower
                reply = Message(
                    Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg
                )
            self.replies.append(reply)
            if node in self.late and msg.metadata.message_type == "train":
                self.held[msg.metadata.message_id] = reply  # past the timeout
                continue
            out.append(reply)
        return out

    def sent_of_type(self, message_type: str) -> list[Message]:
        return [m for m in self.sent if m.metadata.message_type == message_type]
