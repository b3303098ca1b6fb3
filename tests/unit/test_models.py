from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from cortex_app.models import Engine, Model, ModelEvent, ModelState


@pytest.fixture
def session():
    engine = sa.create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)  # unit tests only; the real schema comes from Alembic
    with Session(engine) as s:
        yield s


def _model(**kw) -> Model:
    return Model(**{"name": "tiny", "served_name": "tiny", "engine": Engine.LLAMACPP,
                    "image": "img", "source": "tiny.gguf", **kw})


def test_new_model_is_stopped_with_aware_utc_times(session):
    m = _model()
    session.add(m)
    session.commit()
    session.refresh(m)
    assert m.state is ModelState.STOPPED
    assert m.created_at.tzinfo is not None and m.created_at.utcoffset() == timedelta(0)
    assert m.extra_args == [] and m.extra_env == {}


def test_updated_at_moves_on_update(session):
    m = _model()
    session.add(m)
    session.commit()
    first = m.updated_at
    m.notes = "changed"
    session.add(m)
    session.commit()
    session.refresh(m)
    assert m.updated_at > first


def test_naive_datetimes_are_refused(session):
    m = _model(started_at=datetime(2026, 1, 1))
    session.add(m)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        session.commit()


def test_times_come_back_in_utc(session):
    t = datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    m = _model(started_at=t)
    session.add(m)
    session.commit()
    session.expire_all()
    got = session.exec(select(Model)).one().started_at
    assert got == t and got.utcoffset() == timedelta(0)


def test_name_and_served_name_are_unique(session):
    session.add(_model())
    session.commit()
    session.add(_model(served_name="other"))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    session.add(_model(name="other"))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()


def test_unknown_engine_value_is_refused(session):
    session.add(_model())
    session.commit()
    session.execute(sa.text("UPDATE model SET engine = 'tgi'"))
    session.expire_all()
    with pytest.raises(LookupError):
        session.exec(select(Model)).one()


def test_event_records_a_transition(session):
    e = ModelEvent(model_id=1, model_name="tiny", from_state=ModelState.STOPPED, to_state=ModelState.STARTING,
                   reason="admin clicked Start", actor="admin:root")
    session.add(e)
    session.commit()
    got = session.exec(select(ModelEvent)).one()
    assert (got.from_state, got.to_state, got.actor) == (ModelState.STOPPED, ModelState.STARTING, "admin:root")


@pytest.mark.parametrize("path, expected", [("/models/5", 5), ("/models/12/edit", 12), ("/models/new", 0),
                                            ("/models", 0), ("/models/5x", 0), ("", 0)])
def test_model_id_in_page_paths(path, expected):
    from cortex_app.states.models import model_id_in

    assert model_id_in(path) == expected


def test_secret_looking_env_values_never_reach_the_form():
    from cortex_app.states.model_form import MASK, env_text, parse_env_text, unmask_env

    stored = {"API_KEY": "sk-live-123", "HF_HUB_TOKEN_X": "hf_abc", "LOG_LEVEL": "debug"}
    shown = env_text(stored)
    assert "sk-live-123" not in shown and "hf_abc" not in shown and "LOG_LEVEL=debug" in shown
    edited = parse_env_text(shown.replace("LOG_LEVEL=debug", "LOG_LEVEL=info") + "\nDB_PASSWORD=new")
    assert unmask_env(edited, stored) == {"API_KEY": "sk-live-123", "HF_HUB_TOKEN_X": "hf_abc",
                                          "LOG_LEVEL": "info", "DB_PASSWORD": "new"}
    assert MASK not in unmask_env(edited, stored).values()
