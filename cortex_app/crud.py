"""Creating, reading and editing model configurations (not their runtime: see lifecycle.py).

Every write goes through validation.validate_model; an invalid config raises ConfigInvalid
and nothing is written.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Optional

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session, select

from cortex_app.models import Host, Model, ModelState, utcnow
from cortex_app.settings import Settings
from cortex_app.validation import ConfigInvalid, validate_model


def _validate(session: Session, settings: Settings, data: Mapping[str, Any], *, exclude_id: Optional[int],
              current_host: Any = None) -> dict:
    columns = select(Model.name, Model.served_name, Model.alias)
    others = session.exec(columns.where(Model.id != exclude_id) if exclude_id is not None else columns).all()
    hosts = dict(session.exec(select(Host.id, Host.name)).all())
    if current_host is not None and "host" not in data:  # an edit that does not say keeps its host
        data = {**data, "host": current_host}
    return validate_model(
        data, models_dir=settings.models_dir,
        default_images={"llamacpp": settings.llamacpp_image, "vllm": settings.vllm_image},
        others=[tuple(row) for row in others], hosts=hosts)


def _commit_unique(session: Session) -> None:
    """Commit; a unique-constraint race (two admins saving one name) becomes a field error."""
    try:
        session.commit()
    except sa.exc.IntegrityError as exc:
        session.rollback()
        text = str(exc.orig).lower()
        field = "served_name" if "served_name" in text else "name"
        raise ConfigInvalid({field: "is already taken by another model"}) from None


# Served names and aliases must stay apart (a client's `model` is one or the other), which no
# column constraint can say: this process's model writes check and commit one at a time.
_WRITES = threading.Lock()


def create_model(db: sa.Engine, settings: Settings, data: Mapping[str, Any]) -> Model:
    with _WRITES, Session(db, expire_on_commit=False) as session:
        clean = _validate(session, settings, data, exclude_id=None)
        model = Model(**clean)
        session.add(model)
        _commit_unique(session)
        return model


def update_model(db: sa.Engine, settings: Settings, model_id: int, data: Mapping[str, Any]) -> Model:
    """Replace the configuration. A running model keeps running on its old config until it is
    applied (lifecycle.apply); `is_stale` then says so. A model deleted meanwhile is a
    LookupError, as one that never was."""
    with _WRITES, Session(db, expire_on_commit=False) as session:
        model = session.get(Model, model_id)
        if model is None:
            raise LookupError(f"no model with id {model_id}")
        clean = _validate(session, settings, data, exclude_id=model_id,
                          current_host="auto" if model.auto_host else model.host_id)
        host_id = clean.pop("host_id", model.host_id)
        for key, value in clean.items():
            setattr(model, key, value)
        model.updated_at = utcnow()
        if host_id != model.host_id:
            # A model moves only while stopped, and only to a host that still exists: compare-
            # and-set in this transaction (a Start racing the edit either wins, and the move is
            # refused, or is refused itself: it starts only on the host it read).
            moved = session.execute(sa.update(Model).where(
                Model.id == model_id, Model.state.in_((ModelState.STOPPED, ModelState.FAILED)),
                sa.exists().where(Host.id == host_id)).values(host_id=host_id)).rowcount
            if not moved:
                session.rollback()
                state = session.exec(select(Model.state).where(Model.id == model_id)).first()
                if state in (ModelState.STOPPED, ModelState.FAILED):
                    raise ConfigInvalid({"host": "that host was removed meanwhile; choose another"})
                raise ConfigInvalid({"host": f"model {model.name} is {getattr(state, 'value', state)}: stop it "
                                             "before moving it to another host"})
        session.add(model)
        try:
            _commit_unique(session)
        except StaleDataError:  # found by the chaos harness: an edit racing a delete
            raise LookupError(f"no model with id {model_id} (deleted meanwhile)") from None
        return model


def get_model(db: sa.Engine, model_id: int) -> Optional[Model]:
    with Session(db, expire_on_commit=False) as session:
        return session.get(Model, model_id)


def list_models(db: sa.Engine) -> list[Model]:
    with Session(db, expire_on_commit=False) as session:
        return list(session.exec(select(Model).order_by(Model.name)).all())

