from volinit.cli import main

raise SystemExit(main())
