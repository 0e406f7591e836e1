"""Layer benchmark table, the same as `convnet bench`; `--help` lists the options."""

from convnet.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
