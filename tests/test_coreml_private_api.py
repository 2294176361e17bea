"""Every non-public coremltools symbol the Core ML target relies on still exists.

They are listed once, in ``targets.coreml.private_api.PRIVATE_API``; a coremltools upgrade
that moves or drops one fails here, naming it and the version the code was written against.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("coremltools")

from targets.coreml import private_api  # noqa: E402
from targets.coreml.private_api import PINNED, PRIVATE_API, PrivateApiMissing, private  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("symbol", PRIVATE_API)
def test_private_symbol_exists(symbol: str) -> None:
    try:
        private(symbol)
    except PrivateApiMissing as error:
        pytest.fail(str(error))


def test_a_missing_symbol_is_named_with_the_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private_api, "PRIVATE_API", (*PRIVATE_API, "coremltools.models.utils:_no_such_helper"))
    with pytest.raises(PrivateApiMissing, match=r"coremltools .* has no coremltools.models.utils:_no_such_helper") \
            as error:
        private("coremltools.models.utils:_no_such_helper")
    assert PINNED in str(error.value)
    assert private_api.missing_private_api() == [str(error.value)]


def test_unlisted_symbols_are_refused() -> None:
    with pytest.raises(KeyError, match="PRIVATE_API"):
        private("coremltools.models.utils:_macos_version")


def test_pyproject_pins_what_the_code_was_checked_against() -> None:
    import coremltools

    requirement = re.search(r'"(coremltools[^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert requirement == PINNED
    lowest, below = re.fullmatch(r"coremltools>=([\d.]+),<([\d.]+)", PINNED).groups()

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", text)[:2])

    assert version(lowest) <= version(coremltools.__version__) < version(below), (
        f"coremltools {coremltools.__version__} is outside the pin {PINNED}")


def test_no_coreml_module_reaches_coremltools_internals_around_the_list() -> None:
    """Internals are reached through ``private`` only: no ``from coremltools.converters ...``
    or ``coremltools.models.utils`` import anywhere else in the package."""
    offenders = []
    for path in sorted((ROOT / "targets" / "coreml").rglob("*.py")):
        if path.name == "private_api.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import) coremltools\.(converters|models\.utils)", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
