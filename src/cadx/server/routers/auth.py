"""Bearer tokens for API clients (OAuth2 password flow) and the current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from cadx.server.deps import Ctx, CurrentUser, Repo
from cadx.server.schemas import TokenOut, UserOut, user_out
from cadx.server.security import authenticate

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenOut, summary="Exchange user name and password for a bearer token")
def issue_token(form: Annotated[OAuth2PasswordRequestForm, Depends()], ctx: Ctx, repo: Repo) -> TokenOut:
    user = authenticate(repo, form.username, form.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password",
                            headers={"WWW-Authenticate": "Bearer"})
    return TokenOut(access_token=ctx.tokens.issue(user), expires_in=ctx.tokens.seconds)


@router.get("/me", response_model=UserOut, summary="The logged-in user")
def me(user: CurrentUser) -> UserOut:
    return user_out(user)
