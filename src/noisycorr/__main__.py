from noisycorr.cli.main import main

raise SystemExit(main())
