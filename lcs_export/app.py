"""``lcs-export app``: a sample app and a bundle laid out together, ready to run or to open.

The web app is served as it is laid out here::

    DIR/index.html, style.css, src/*.mjs       the app (sample_apps/web)
    DIR/policy/policy.mjs                      the shared level policy (sample_apps/policy)
    DIR/schema/manifest.schema.json            the schema Python checks manifests with
    DIR/vendor/onnxruntime-web/, vendor/ajv/   from sample_apps/web/node_modules (npm ci)
    DIR/bundle/                                manifest.json and its artifacts
    DIR/lcs-app.json                           what was copied from where (marks DIR as ours)

Android and iOS keep the repository's layout, ``DIR/android/`` (the Gradle project, the bundle
in the app's assets) or ``DIR/ios/`` (the Swift package and app, the bundle in ``App/bundle``)
beside ``DIR/policy/`` (the shared case table), so the projects' own tests of the policy find
the case table where they find it in the repository. The bundle is checked first (schema, target, every sha256)
and everything is staged in a temporary sibling of DIR and renamed into place, so a failure
leaves nothing behind.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lcs_export.bundle import (
    MANIFEST_NAME, PARITY_NAME, IntegrityResult, check_integrity, read_bundle_file, sha256_of, staged_directory,
)
from lcs_export.manifest import now, read_manifest
from lcs_train.errors import LcsError

PLATFORMS = ("web", "android", "ios")
#: The bundle target each platform's app runs.
PLATFORM_TARGETS = {"web": "onnx", "android": "onnx", "ios": "coreml"}
#: Where each platform's app expects the bundle, relative to DIR.
BUNDLE_PLACES = {"web": "bundle", "android": "android/app/src/main/assets/bundle", "ios": "ios/App/bundle"}
#: The shared policy files copied beside an Android or iOS project (its tests read the case table).
POLICY_FILES = ("README.md", "policy.json", "policy.schema.json", "cases.json")
#: Written into DIR; ``--force`` replaces only a directory that holds it.
APP_MARKER = "lcs-app.json"
#: The web app's own files (tests, package files and node_modules stay behind).
WEB_APP_FILES = ("index.html", "style.css", "src")
#: npm files the page loads: onnxruntime-web's WASM build and Ajv's draft 2020-12 bundle.
WEB_VENDOR_FILES = {
    "onnxruntime-web/dist/ort.wasm.min.mjs": "vendor/onnxruntime-web/ort.wasm.min.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs",
    "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm",
    "ajv-dist/dist/ajv2020.min.js": "vendor/ajv/ajv2020.min.js",
}
#: Build outputs and tool state never copied out of a sample app.
IGNORED = shutil.ignore_patterns("node_modules", "build", ".gradle", ".build", ".idea", "*.xcuserdatad",
                                 "DerivedData", "__pycache__", "local.properties", ".swiftpm")


class IntegrityFailure(Exception):
    """The bundle's files do not match its manifest (the CLI exits 1, like ``inspect``)."""

    def __init__(self, bundle: Path, failures: list[IntegrityResult]) -> None:
        super().__init__(f"{bundle}: {len(failures)} file(s) do not match the manifest")
        self.bundle = bundle
        self.failures = failures


@dataclass
class AppResult:
    """What ``build_app_directory`` wrote."""

    directory: Path
    platform: str
    bundle_place: str
    files: int
    next_steps: list[str] = field(default_factory=list)


def sample_apps_root() -> Path:
    """``sample_apps/`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "sample_apps"


def check_bundle_for(bundle: Path, platform: str) -> dict[str, Any]:
    """The bundle's manifest, once it is known to suit ``platform`` and to be intact.

    Raises ``LcsError`` (schema, newer version, wrong target, missing file) or
    ``IntegrityFailure`` (a sha256 that does not match).
    """
    if platform not in PLATFORMS:
        raise LcsError(f"--platform {platform!r} is not one of {', '.join(PLATFORMS)}", "pass --platform web, android or ios")
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    target, wanted = manifest["target"]["name"], PLATFORM_TARGETS[platform]
    if target != wanted:
        raise LcsError(
            f"{bundle} is a bundle for {target}; the {platform} app runs {wanted} bundles",
            f"export one with lcs-export {wanted} CHECKPOINT ... -o DIR and pass that DIR",
        )
    results = check_integrity(bundle, manifest)
    missing = [item.path for item in results if item.problem == "missing"]
    if missing:
        raise LcsError(
            f"{bundle} lists {', '.join(missing)} but the file is not there",
            "copy the whole bundle directory, or export it again",
        )
    failures = [item for item in results if not item.ok]
    if failures:
        raise IntegrityFailure(bundle, failures)
    return manifest


def check_output(output: Path, force: bool) -> None:
    """Refuse a non-empty ``output`` unless ``force`` and ``lcs-export app`` wrote it."""
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir() or output.is_symlink():
        raise LcsError(f"output {output} exists and is not a directory", "choose another -o/--out path")
    if not any(output.iterdir()):
        return
    if not force:
        raise LcsError(f"output directory {output} exists and is not empty",
                       "pass --force to replace an app lcs-export wrote, or choose another -o/--out")
    if not (output / APP_MARKER).is_file():
        # --force only replaces what this command wrote: anything else may be the user's.
        raise LcsError(f"output directory {output} was not written by lcs-export app (no {APP_MARKER}); it was left untouched",
                       "choose another -o/--out path, or remove that directory yourself")


def _copy_bundle(bundle: Path, manifest: dict[str, Any], destination: Path) -> None:
    """The manifest, parity.json and every listed artifact, nothing else: each file is copied
    from the bytes its sha256 was checked on, without following links out of the bundle."""
    destination.mkdir(parents=True)
    copied = check_integrity(bundle, manifest, copy_to=destination)
    if not all(item.ok for item in copied):  # the source changed since check_bundle_for
        raise LcsError(f"{bundle} changed while it was being copied", "run lcs-export app again")
    for name in (MANIFEST_NAME, PARITY_NAME):
        try:
            (destination / name).write_bytes(read_bundle_file(bundle, name))
        except FileNotFoundError:
            if name == MANIFEST_NAME:
                raise


def _web_files(staging: Path) -> None:
    root = sample_apps_root()
    web, policy = root / "web", root / "policy" / "policy.mjs"
    node_modules = web / "node_modules"
    missing = [name for name in WEB_VENDOR_FILES if not (node_modules / name).is_file()]
    if missing:
        raise LcsError(
            f"onnxruntime-web and ajv-dist are not installed in {web} (no node_modules/{missing[0]})",
            f"run npm ci --prefix {web} (or sh {web / 'install-deps.sh'}), then this command again",
        )
    if not policy.is_file():
        raise LcsError(f"the level policy module {policy} is missing", "use a complete lcs checkout")
    for name in WEB_APP_FILES:
        source = web / name
        if source.is_dir():
            shutil.copytree(source, staging / name, ignore=IGNORED)
        else:
            shutil.copy2(source, staging / name)
    (staging / "policy").mkdir()
    shutil.copy2(policy, staging / "policy" / "policy.mjs")
    (staging / "schema").mkdir()
    shutil.copy2(Path(__file__).parent / "schemas" / "manifest.schema.json", staging / "schema" / "manifest.schema.json")
    for source, target in WEB_VENDOR_FILES.items():
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(node_modules / source, staging / target)


def _project_files(platform: str, staging: Path) -> None:
    source = sample_apps_root() / platform
    if not source.is_dir():
        raise LcsError(f"the {platform} sample app ({source}) is not in this checkout", "use a complete lcs checkout")
    shutil.copytree(source, staging / platform, ignore=IGNORED)
    (staging / "policy").mkdir()
    for name in POLICY_FILES:
        shutil.copy2(sample_apps_root() / "policy" / name, staging / "policy" / name)


def _npm_version(package: str) -> str | None:
    path = sample_apps_root() / "web" / "node_modules" / package / "package.json"
    try:
        return json.loads(path.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def next_steps(platform: str, output: Path) -> list[str]:
    """What to do with the directory, in words a user can follow."""
    if platform == "web":
        return [f"serve it: python3 -m http.server --bind 127.0.0.1 --directory {output} 8000 and open "
                "http://127.0.0.1:8000/ (or pass --serve to lcs-export app); any static server that sends .mjs as "
                "text/javascript and .wasm as application/wasm will do",
                "?bundle=OTHER/ in the URL loads another bundle copied beside bundle/"]
    if platform == "android":
        return [f"open {output / 'android'} in Android Studio (run `gradle wrapper` there first: no wrapper jar "
                "is shipped) and run the app configuration",
                f"the bundle is in {output / BUNDLE_PLACES['android']}; replace it to ship another"]
    return [f"follow {output / 'ios' / 'README.md'}: an iOS app target in Xcode 16 with the LcsCore package and "
            "the files of ios/App (iOS 18 for multifunction packages)",
            f"add {output / BUNDLE_PLACES['ios']} to that app target as a folder reference named 'bundle'; "
            f"on a Mac, LCS_BUNDLE={output / BUNDLE_PLACES['ios']} swift run LcsSampleApp"]


def build_app_directory(bundle: Path, platform: str, output: Path, force: bool = False) -> AppResult:
    """Check ``bundle`` and write the ``platform`` sample app with it into ``output``."""
    bundle, output = Path(bundle), Path(output)
    manifest = check_bundle_for(bundle, platform)
    with staged_directory(output, lambda place: check_output(place, force)) as staging:
        if platform == "web":
            _web_files(staging)
        else:
            _project_files(platform, staging)
        place = BUNDLE_PLACES[platform]
        if (staging / place).exists():  # a placeholder bundle shipped with the sample project
            shutil.rmtree(staging / place)
        _copy_bundle(bundle, manifest, staging / place)
        marker = {
            "platform": platform, "created_at": now(), "bundle": str(bundle.resolve()), "bundle_place": place,
            "manifest_sha256": sha256_of(bundle / MANIFEST_NAME), "target": manifest["target"]["name"],
            "onnxruntime_web": _npm_version("onnxruntime-web") if platform == "web" else None,
        }
        (staging / APP_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        files = sum(1 for path in staging.rglob("*") if path.is_file())
    return AppResult(output, platform, place, files, next_steps(platform, output))


class AppRequestHandler(SimpleHTTPRequestHandler):
    """Static files with the types browsers insist on for modules and WebAssembly, no caching
    (a re-exported bundle must not meet a cached manifest), and cross-origin isolation so
    onnxruntime-web may use its threaded WASM build."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
        ".json": "application/json", ".onnx": "application/octet-stream",
    }

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per file would bury the URL; errors still reach the page


def make_server(directory: Path, port: int = 8000, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server for ``directory`` on ``host:port`` (port 0: a free one); call serve_forever()."""
    handler = functools.partial(AppRequestHandler, directory=str(directory))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise LcsError(f"cannot serve on {host}:{port} ({error.strerror or error})",
                       "pass --port with a free port, or --port 0 to pick one") from None

