"""Errors a user can hit and fix, and the one-line report a stage gives for them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """Something the user can fix (a param, a mirror, a missing GPU); its message says how."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the model is unusable, and no weights are written."""


def missing_model(path: Path | str) -> UserError:
    """A model file that is not there (weights, params), from either training loop."""
    return UserError(f"{path} not found; run `dvc repro` to train it (or `dvc pull` to fetch it)")


def unreadable_model(path: Path | str, error: BaseException) -> UserError:
    """A model file that cannot be read: damaged, truncated, not a model at all."""
    reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return UserError(f"{path} is not a readable model ({reason}); restore it with "
                     f"`dvc checkout {Path(path).parent}` or retrain it with `dvc repro`")


def mismatched_model(path: Path | str, reason: str) -> UserError:
    """Weights that do not fit the network their params describe."""
    return UserError(f"{path} does not fit the model params.yaml describes ({reason[:200]}); "
                     f"retrain it with `dvc repro`")


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's `main`; a UserError becomes one line on stderr and exit status 2."""
    import dlprojects

    if dlprojects.LOADED_BEFORE_PIN:
        print(f"warning: {' and '.join(dlprojects.LOADED_BEFORE_PIN)} loaded before dlprojects, so "
              f"their CPU kernels are not pinned and results may differ on another CPU; import "
              f"dlprojects first", file=sys.stderr)
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted; run the stage again to resume", file=sys.stderr)
        raise SystemExit(130) from None


def utf8_text(name: str, data: bytes) -> str:
    """The text of a review file's bytes, which must be UTF-8 (one line naming `name` if not)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{name}: not UTF-8 text (byte {error.start}); save the review as "
                        f"UTF-8") from None


def database_reason(error: BaseException, limit: int = 160) -> str:
    """The first line of what a database driver said under a SQLAlchemy error (its `orig`), cut to
    `limit` characters: the part of the error a one-line message can quote."""
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0][:limit]
