"""DynamoDbLeases: named leases stored in the tasks table under a reserved partition."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from src.domain.time import iso_ms
from src.infrastructure.dynamodb.errors import is_condition_failure

# Not a UUID, so it can never collide with a job's tasks; invisible to the job table.
LEASE_PARTITION = "_service-leases"


class DynamoDbLeases:  # implements Leases
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def acquire(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        try:
            await self._client.put_item(
                TableName=self._table,
                Item={
                    "jobId": {"S": LEASE_PARTITION},
                    "taskId": {"S": name},
                    "leaseOwner": {"S": owner},
                    "leaseExpiresAt": {"S": iso_ms(until)},
                },
                ConditionExpression="attribute_not_exists(taskId) OR leaseExpiresAt <= :now "
                "OR leaseOwner = :owner",
                ExpressionAttributeValues={":now": {"S": iso_ms(now)}, ":owner": {"S": owner}},
            )
        except ClientError as err:
            if is_condition_failure(err):
                return False
            raise
        return True
