"""The kit's own tests. Files under data/ are inputs that tests run in subprocesses
(failure scenarios, files to migrate, suites for test matrices), not tests here."""

collect_ignore = ["data", "nix"]
