from holoport.cli import main

raise SystemExit(main())
