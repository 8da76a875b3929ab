"""Write .dvc/offline-plots.html: DVC's plots page with vega, vega-lite and vega-embed inlined.

`dvc plots show` otherwise writes HTML that loads vega from a CDN and stays blank offline. The three
packages come from the npm registry (`npm pack`, pinned versions); `.dvc/config` points
`plots.html_template` at the file. Without npm the page falls back to the CDN scripts, so
`dvc plots show` still works where there is internet, and says why it may be blank where there is none.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {"vega@5.33.1": "build/vega.min.js", "vega-lite@5.23.0": "build/vega-lite.min.js",
            "vega-embed@6.29.0": "build/vega-embed.min.js"}
CDN = "\n".join(f'<script src="https://cdn.jsdelivr.net/npm/{p}"></script>' for p in PACKAGES)
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>MRL plots</title>
    {scripts}
    <style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def inline_scripts(workdir: Path) -> str:
    parts = []
    for spec, member in PACKAGES.items():
        out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, capture_output=True, text=True,
                             timeout=300, check=True).stdout.strip().splitlines()[-1]
        with tarfile.open(workdir / out) as t:
            js = t.extractfile(f"package/{member}").read().decode("utf8")
        js = js.replace("</script", "<\\/script")
        parts.append(f"<script>/* {spec} (BSD-3-Clause) */\n{js}\n</script>")
    return "\n".join(parts)


def main(dest: str = ".dvc/offline-plots.html") -> None:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scripts = inline_scripts(Path(tmp))
        note = "vega inlined"
    except (OSError, subprocess.SubprocessError, KeyError, IndexError) as exc:
        scripts, note = CDN, f"npm unavailable ({type(exc).__name__}); plots page loads vega from a CDN"
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(dest).with_suffix(".tmp")
    tmp.write_text(PAGE.format(scripts=scripts), encoding="utf8")
    tmp.replace(dest)
    print(f"plots template: {dest} ({note})")


if __name__ == "__main__":
    main(*sys.argv[1:])
