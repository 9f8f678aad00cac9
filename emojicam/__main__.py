from emojicam.cli import main

raise SystemExit(main())
