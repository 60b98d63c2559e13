import signal

try:
    try:
        from holoport.cli import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the command loads, or between its handlers
        code = 130
    # a Ctrl-C from here on (the rest of the process group's, while Python shuts down) must not
    # turn a clean exit into death by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except KeyboardInterrupt:  # one that arrived just as the command returned, before the line above
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 130
raise SystemExit(code)
