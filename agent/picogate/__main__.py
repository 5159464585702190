from picogate.cli import main

raise SystemExit(main())
