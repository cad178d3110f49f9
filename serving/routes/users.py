"""``/users``: user ids seen in the logs, most active first (the search page picks a simulated user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from serving.deps import RuntimeDep
from serving.schemas import UsersOut

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=UsersOut)
def users(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> UsersOut:
    known = runtime.parts.catalog.users
    return UsersOut(users=list(known[:limit]), total=len(known))
