from bench import cli

raise SystemExit(cli.main())
