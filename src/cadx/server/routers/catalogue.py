"""The models on offer, grouped by category, with classes, input size and test metrics."""

from __future__ import annotations

from itertools import groupby

from fastapi import APIRouter

from cadx.server.deps import Ctx, CurrentUser
from cadx.server.schemas import ModelCategory, ModelsOut, model_out

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsOut, summary="Models offered, grouped by category")
def list_models(ctx: Ctx, _user: CurrentUser) -> ModelsOut:
    entries = ctx.store.entries()  # sorted by category, then id
    return ModelsOut(categories=[
        ModelCategory(name=name, models=[model_out(e, ctx.store.is_loaded(e.id), ctx.store.backend_of(e.id))
                                         for e in group])
        for name, group in groupby(entries, key=lambda e: e.category)])
