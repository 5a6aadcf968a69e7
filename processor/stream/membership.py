"""Leave the consumer group at once on a clean stop, as a static member.

With ``group.instance.id`` set, a member that stops sends no LeaveGroup (KIP-345): a restart within
the session timeout then gets its partitions back without a rebalance, which is what a crash or a
rolling restart wants. A deliberate stop (scaling in, moving the worker) must instead hand its
partitions over at once. aiokafka 0.14's protocol classes know LeaveGroup only up to v1, which
cannot name an instance id, so this module defines LeaveGroup v3 (KIP-345's "remove members by
group.instance.id", the request Java's ``Admin.removeMembersFromConsumerGroup`` sends) with
aiokafka's public protocol building blocks and sends it to the group coordinator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger(__name__)


class LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(
                ("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16)
            ),
        ),
    )


class LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class LeaveGroupByInstance(Request[LeaveGroupRequestV3]):
    API_KEY: ClassVar[int] = 13

    def __init__(self, group_id: str, instance_id: str) -> None:
        self.group_id = group_id
        self.instance_id = instance_id

    def build(self, request_struct_class: type[LeaveGroupRequestV3]) -> LeaveGroupRequestV3:
        # member_id "" with an instance id: the coordinator removes whichever member holds the id
        return request_struct_class(self.group_id, [("", self.instance_id)])


async def leave_group(client_options: Mapping[str, Any], group_id: str, instance_id: str) -> bool:
    """Remove the static member ``instance_id`` from ``group_id``; return whether the broker agreed."""
    admin = AIOKafkaAdminClient(**client_options)
    client = AIOKafkaClient(**client_options)
    try:
        await admin.start()
        coordinator = await admin.find_coordinator(group_id)
        await client.bootstrap()
        response: Any = await client.send(coordinator, LeaveGroupByInstance(group_id, instance_id))
        errors = [response.error_code] + [member[2] for member in response.members]
        failed = [code for code in errors if code != 0]
        if failed:
            log.warning("leaving group %s as %s: %s", group_id, instance_id, for_code(failed[0]).__name__)
            return False
        log.info("left group %s as %s", group_id, instance_id)
        return True
    finally:
        await client.close()
        await admin.close()
