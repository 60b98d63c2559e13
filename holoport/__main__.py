try:
    from holoport.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command loads
    raise SystemExit(130) from None

raise SystemExit(main())
