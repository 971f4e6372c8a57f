"""Bearer tokens for API clients (OAuth2 password flow, throttled), logout, password change, and the admin's
session revoke and login unlock. Tokens are short-lived (``token_minutes``): clients log in again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from cadx.server.deps import AdminUser, Ctx, CurrentUser, Repo, UserId, client_address
from cadx.server.errors import ApiError
from cadx.server.schemas import CountOut, ErrorOut, PasswordChangeIn, TokenOut, UnlockIn, UserOut, user_out
from cadx.server.security import hash_password, verify_password
from cadx.server.services.auth import LoginThrottled, log_in, unlock
from cadx.server.services.sessions import open_session, revoke, revoke_all

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenOut, responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}},
             summary="Exchange user name and password for a short-lived bearer token")
def issue_token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], ctx: Ctx,
                repo: Repo) -> TokenOut:
    try:
        user = log_in(repo, ctx.settings, form.username, form.password, client_address(request))
    except LoginThrottled as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                            headers={"Retry-After": str(exc.retry_after)}) from None
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password",
                            headers={"WWW-Authenticate": "Bearer"})
    token = open_session(repo, ctx.tokens, user, "api", ctx.tokens.seconds)
    repo.commit()
    return TokenOut(access_token=token, expires_in=ctx.tokens.seconds)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             summary="End the session this request is authenticated with (bearer token or cookie)")
def logout(request: Request, repo: Repo, user: CurrentUser) -> Response:
    revoke(repo, request.state.auth_session)
    repo.audit(user, "logout", None, None, client_address(request))
    repo.commit()
    request.session.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={403: {"model": ErrorOut}}, summary="Change your password; ends all your sessions")
def change_password(body: PasswordChangeIn, request: Request, repo: Repo, user: CurrentUser) -> Response:
    if not verify_password(user.password_hash, body.current_password):
        raise ApiError(403, "the current password is wrong")
    user.password_hash = hash_password(body.new_password)
    revoke_all(repo, user.id)
    repo.audit(user, "password", None, None, client_address(request))
    repo.commit()
    request.session.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=UserOut, summary="The logged-in user")
def me(user: CurrentUser) -> UserOut:
    return user_out(user)


@router.post("/users/{user_id}/revoke", response_model=CountOut, responses={404: {"model": ErrorOut}},
             summary="End every session of a user (admin)")
def revoke_user(user_id: UserId, request: Request, repo: Repo, admin: AdminUser) -> CountOut:
    if repo.user_by_id(user_id) is None:
        raise ApiError(404, f"no user {user_id}")
    count = revoke_all(repo, user_id)
    repo.audit(admin, "revoke", None, f"user {user_id}: {count} session(s)",
               client_address(request))
    repo.commit()
    return CountOut(count=count)


@router.post("/unlock", response_model=CountOut, summary="Clear failed logins of an account and/or address (admin)")
def unlock_login(body: UnlockIn, request: Request, repo: Repo, admin: AdminUser) -> CountOut:
    if not body.username and not body.address:
        raise ApiError(422, "give a username, an address or both")
    count = unlock(repo, body.username, body.address)
    repo.audit(admin, "unlock", None, f"user {body.username!r} address {body.address!r}",
               client_address(request))
    repo.commit()
    return CountOut(count=count)
