from simclrv2.cli import main

raise SystemExit(main())
