"""Build the installable plugin zip, or install the plugin into a plugins folder.

The zip holds one folder ``sar_optical_matcher/`` with the plugin's code, ``metadata.txt``,
``LICENSE``, the icon and the shipped model, nothing else (no tests, caches or training code).
In a git checkout only the files git tracks are packed: a scratch script or a trial model left
in the plugin folder stays out of the zip (and is named), as it is out of a clean clone.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "sar_optical_matcher"
SUFFIXES = {".py", ".svg", ".onnx", ".json", ".txt"}


def tracked_files(root: Path = ROOT) -> set[str] | None:
    """Paths (relative to ``root``, posix) that git tracks under the plugin folder.

    None when ``root`` is not the top of a git checkout (a source archive, or a folder inside
    some other repository) or git is not installed: then every file of the folder is packed.
    """
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, check=True, text=True
            ).stdout

        top = git("rev-parse", "--show-toplevel").strip()
        if not top or Path(top).resolve() != root.resolve():
            return None
        listed = git("ls-files", "-z", "--", PLUGIN)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {name for name in listed.split("\0") if name}


def _candidates(root: Path) -> list[Path]:
    pkg = root / PLUGIN
    return [
        path
        for path in sorted(pkg.rglob("*"))
        if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
    ]


def untracked_files(root: Path = ROOT) -> list[str]:
    """Files of the plugin folder's kinds that git does not track, so the zip leaves out."""
    tracked = tracked_files(root)
    if tracked is None:
        return []
    names = (path.relative_to(root).as_posix() for path in _candidates(root))
    return [name for name in names if name not in tracked]


def plugin_files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(source file, path inside the plugin folder) for everything the plugin ships."""
    pkg = root / PLUGIN
    tracked = tracked_files(root)
    files = [
        (path, path.relative_to(pkg).as_posix())
        for path in _candidates(root)
        if tracked is None or path.relative_to(root).as_posix() in tracked
    ]
    files += [(root / "metadata.txt", "metadata.txt"), (root / "LICENSE", "LICENSE")]
    return files


def build_zip(out: Path, root: Path = ROOT) -> Path:
    """Write the plugin zip atomically and return its path (ValueError: ``out`` is a folder)."""
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; give the zip's file name, e.g. {out / PLUGIN}.zip"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for src, arc in plugin_files(root):
                # rw-r--r-- whatever the file's mode here: unzipped into a shared plugins folder
                # (as root, say) every user's QGIS must read it
                info = zipfile.ZipInfo.from_file(src, f"{PLUGIN}/{arc}")
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, src.read_bytes())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # only there when something failed
    return out


def install_plugin(plugins_dir: Path, root: Path = ROOT) -> Path:
    """Copy the plugin into ``plugins_dir/sar_optical_matcher``, replacing an older copy.

    The new copy is written beside the old one and swapped in only once it is complete; the
    old copy is deleted only once the new one is in place, so a failed copy (a full disk, an
    unreadable file) or a failed swap leaves the installed plugin as it was. A symbolic link
    there (a development checkout linked into the profile) is replaced, its target untouched.
    Files are rw-r--r-- and folders rwxr-xr-x whatever the umask, as in the zip: unzipped
    into a shared plugins folder, every user's QGIS must read it.
    """
    plugins_dir.mkdir(parents=True, exist_ok=True)
    dest = plugins_dir / PLUGIN
    staging = Path(tempfile.mkdtemp(prefix=f".{PLUGIN}.new-", dir=plugins_dir))
    old = plugins_dir / f".{PLUGIN}.old-{staging.name.rsplit('-', 1)[-1]}"
    try:
        for src, arc in plugin_files(root):
            target = staging / arc
            for folder in reversed(list(target.relative_to(staging).parents)[:-1]):
                (staging / folder).mkdir(exist_ok=True)
                (staging / folder).chmod(0o755)
            shutil.copyfile(src, target)
            target.chmod(0o644)
        staging.chmod(0o755)  # mkdtemp makes it 0700
        if dest.is_symlink():
            dest.unlink()  # the link only: its target is someone's checkout
        elif dest.exists():
            dest.rename(old)
        try:
            staging.rename(dest)
        except OSError:
            if old.exists() and not dest.exists():
                old.rename(dest)  # the old copy back; if even that fails, it stays as `old`
            raise
        shutil.rmtree(old, ignore_errors=True)  # the new copy is in place
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only there when something failed
    return dest


def main() -> None:
    """Command line: ``--out dist/sar_optical_matcher.zip`` or ``--install DIR``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="zip file to write")
    parser.add_argument("--install", type=Path, help="plugins folder to install into")
    args = parser.parse_args()
    if not args.out and not args.install:
        parser.error("give --out and/or --install")
    left_out = untracked_files()
    if left_out:
        print(f"left out, as git does not track them: {', '.join(left_out)}")
    if args.out:
        try:
            path = build_zip(args.out)
        except ValueError as exc:
            parser.error(str(exc))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.install:
        print(f"installed into {install_plugin(args.install)}")


if __name__ == "__main__":
    main()
