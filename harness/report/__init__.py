"""Certification reports: JUnit XML -> report.json, report.md, report.html.

A report folder is verifiable (sha256 over canonical content, SHA256SUMS over
its files, an optional ``ssh-keygen -Y sign`` signature) and mergeable into one
matrix report. Torch-free except the machine fingerprint, which imports torch
when called; never imports the rank runner.

Modules: junit (parse), fingerprint, schema (build, seal), views + render
(Markdown, HTML), bundle (write, sign, verify), merge, progress and
pytest_progress (live counts while certify runs), waivers and reference (the
user's TOML files, read through inputs).
"""
