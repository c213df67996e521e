from torchjob_trainer.main import main

main()
