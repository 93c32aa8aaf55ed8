# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_prism_pretrain_global_optspecs
    string join \n h/help V/version
end

function __fish_prism_pretrain_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_prism_pretrain_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_prism_pretrain_using_subcommand
    set -l cmd (__fish_prism_pretrain_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -s h -l help -d 'Print help'
complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -s V -l version -d 'Print version'
complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -f -a "train" -d 'Pretrain (or continue pretraining) on a manifest of scans'
complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -f -a "manifest" -d 'Write a manifest CSV for the NIfTI files of a folder (with their JSON sidecars)'
complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -f -a "export" -d 'Write the encoder (or the whole network) of a run\'s checkpoint'
complete -c prism-pretrain -n "__fish_prism_pretrain_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l data -d 'Training data: a manifest CSV (see `prism-pretrain manifest --help`) or a folder of NIfTI files with optional JSON sidecars' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -s d -l out-dir -d 'Folder for checkpoints, the log and the exported weights' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l init -d 'Starting weights: a PRISM checkpoint (the encoder, and the heads, generator and style mapping where present), an encoder alone, or a network.safetensors of an earlier run' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l feature-size -d 'Feature size of a network started from scratch (PRISM\'s published size is 48; the latent has 16 times as many channels)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l depths -d 'Swin blocks per encoder stage of a network started from scratch (PRISM\'s B, L and H scales: 2,2,2,2; 2,2,6,2; 2,2,18,2)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l roi -d 'Crop size in voxels (1 mm): one edge or three, multiples of 32' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l batch-size -d 'Crops per step (PRISM: 18 per GPU). On a CPU with 16–32 GB of memory use 2 crops of 64³ at feature size 12' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l lr -d 'Peak learning rate of each of the three AdamW optimizers' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l weight-decay -d 'AdamW weight decay (applied to every parameter, as PRISM does)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l warmup-steps -d 'Steps of linear warm-up before the cosine decay' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l max-steps -d 'Total training steps, over all resumed sessions' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l max-time -d 'Stop (saving a checkpoint, exit 3) after this many minutes of this session' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l generator-every -d 'Run the generator step (C) every N steps' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l contrastive-weight -d 'Weight of the NT-Xent term in the generator step' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l temperature -d 'NT-Xent temperature' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l validate-every -d 'Steps between validations (0: never)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l checkpoint-every -d 'Steps between checkpoints (0: only at the end)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l val-subjects -d 'Subjects held out for the validation reconstruction loss (0: no validation)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l val-data -d 'Validation scans from their own manifest or folder, instead of holding out --val-subjects of --data' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l workers -d 'Background threads that load, crop and corrupt the next batches' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l prefetch -d 'Batches prepared ahead of the training step' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l seed -d 'Seed of every random choice (initialization, split, crops, corruption, styles)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l threads -d 'Number of CPU threads (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS)' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l device -d 'Compute device: cpu, cuda or cuda:N' -r
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -l resume -d 'Continue the run in --out-dir from its last checkpoint'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -s q -l quiet -d 'Print only errors'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand train" -s h -l help -d 'Print help'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand manifest" -s o -l output -d 'Manifest to write (written atomically; an existing file is replaced)' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand manifest" -s h -l help -d 'Print help'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand export" -s d -l run-dir -d 'Run folder of `prism-pretrain train`' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand export" -s o -l output -d 'File to write (.safetensors)' -r -F
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand export" -l best -d 'Take the best validation checkpoint instead of the last one'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand export" -l network -d 'Write every tensor of the network, not only the encoder'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand export" -s h -l help -d 'Print help'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand help; and not __fish_seen_subcommand_from train manifest export help" -f -a "train" -d 'Pretrain (or continue pretraining) on a manifest of scans'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand help; and not __fish_seen_subcommand_from train manifest export help" -f -a "manifest" -d 'Write a manifest CSV for the NIfTI files of a folder (with their JSON sidecars)'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand help; and not __fish_seen_subcommand_from train manifest export help" -f -a "export" -d 'Write the encoder (or the whole network) of a run\'s checkpoint'
complete -c prism-pretrain -n "__fish_prism_pretrain_using_subcommand help; and not __fish_seen_subcommand_from train manifest export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
