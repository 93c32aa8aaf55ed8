# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_prism_seg_global_optspecs
    string join \n h/help V/version
end

function __fish_prism_seg_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_prism_seg_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_prism_seg_using_subcommand
    set -l cmd (__fish_prism_seg_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c prism-seg -n "__fish_prism_seg_needs_command" -s h -l help -d 'Print help'
complete -c prism-seg -n "__fish_prism_seg_needs_command" -s V -l version -d 'Print version'
complete -c prism-seg -n "__fish_prism_seg_needs_command" -f -a "predict" -d 'Write a label map per scan and a CSV of label volumes'
complete -c prism-seg -n "__fish_prism_seg_needs_command" -f -a "train" -d 'Fine-tune SwinUNETR on labelled scans'
complete -c prism-seg -n "__fish_prism_seg_needs_command" -f -a "eval" -d 'Score label maps against reference label maps (Dice, HD95, volumes)'
complete -c prism-seg -n "__fish_prism_seg_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -s o -l output -d 'Write the CSV to FILE instead of standard output. Rows collect in FILE.partial while running; FILE appears when the run ends with every input done. A rerun skips inputs already in FILE or FILE.partial' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l shard -d 'Process only shard I of N (0-based, 0 <= I < N): input number n goes to shard n mod N. Without this option a SLURM job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN) selects the shard; 0/1 processes every input' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l threads -d 'Number of CPU threads for computation (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS). Default: RAYON_NUM_THREADS if set, else the number of physical cores for candle\'s kernels and of logical CPUs for rayon' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l device -d 'Compute device: cpu, cuda (GPU 0) or cuda:N (GPU N, 0-based). CUDA needs a binary built with the cuda feature' -r -f
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -s m -l model -d 'Fine-tuned SwinUNETR: a state dict (.pt, as torch.save(model.state_dict()) writes it) or .safetensors with the same names' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -s d -l out-dir -d 'Folder for the label maps (created if missing)' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l template -d 'File name of each label map, without .nii.gz: {id} is the scan\'s id (letters, digits, \'-\', \'_\' and \'.\' around it)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l roi -d 'Sliding-window size in voxels: one edge, or three for i,j,k; multiples of 32 (default: the model description\'s, else 96)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l overlap -d 'Fraction of a window shared with its neighbour, in [0, 1)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l preprocess -d 'Preprocessing: `prism` (RAS+, resampling to --spacing, foreground crop, z-score over non-zero voxels, zero padding to a multiple of 32) or `none` (the voxel array as it is)' -r -f -a "prism\t''
none\t''"
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l spacing -d 'Voxel spacing in mm the network runs at, one value or three (default: the model description\'s, else 1)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l labels -d 'Label names for the CSV columns, from a CSV `id,name` or text lines `ID name` (the AAL atlas format). Default: the model description\'s names, else label_K' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l volume -d 'Volume of 4-D inputs to segment (0-based)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l overwrite -d 'Ignore the rows of an earlier run in FILE and FILE.partial and compute every input again'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l keep-going -d 'Continue after an input fails; the exit status is then 1 if any input failed. Without it the first failure stops the run (rows written so far are kept)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -s q -l quiet -d 'Print only errors on standard error (no progress, no summary)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l mirror -d 'Average the predictions over the 8 mirrorings of the three axes (8 times slower)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l probabilities -d 'Also write {id}_prob.nii.gz: 4-D float32, volume K the probability of class K (0 = background). Costs one float per class and voxel of memory, which the label map alone avoids'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -l qc -d 'Also write {id}_qc.png: three orthogonal slices through the labelled region with the labels overlaid'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand predict" -s h -l help -d 'Print help'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l data -d 'Training cases: a CSV (image column(s), a label column, optional id and split columns) or an nnU-Net v2 raw dataset folder (imagesTr/, labelsTr/, dataset.json)' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l label-column -d 'Name of the label column of a CSV' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -s d -l out-dir -d 'Folder for checkpoints, the log and the exported model' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l init -d 'Starting weights: a PRISM encoder checkpoint (decoder starts fresh) or a whole SwinUNETR state dict; without it every weight starts fresh' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l classes -d 'Number of classes, background included (default: from dataset.json)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l feature-size -d 'Feature size of a network started from scratch (PRISM\'s published size is 48)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l freeze -d 'Encoder parameters kept fixed: none, all, or N (patch embedding and the first N stages)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l spacing -d 'Voxel spacing in mm the cases are resampled to: one value or three' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l roi -d 'Training crop size in voxels: one edge or three, multiples of 32' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l batch-size -d 'Crops per step. Memory grows with it: at the published size (feature size 48) one 96³ crop needs about 16 GB on the CPU, one 64³ crop about 7 GB' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l lr -d 'Peak learning rate of AdamW' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l weight-decay -d 'AdamW weight decay (not applied to biases and norm weights)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l warmup-steps -d 'Steps of linear warm-up before the cosine decay' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l max-steps -d 'Total training steps, over all resumed sessions' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l max-time -d 'Stop (saving a checkpoint, exit 3) after this many minutes of this session' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l validate-every -d 'Steps between validations (0: never)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l checkpoint-every -d 'Steps between checkpoints (0: only at the end)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l val-fraction -d 'Fraction of cases held out for validation when the data has no split column' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l seed -d 'Seed of every random choice (initialization, split, crops, augmentation)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l threads -d 'Number of CPU threads (sets RAYON_NUM_THREADS and CANDLE_NUM_THREADS)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l device -d 'Compute device: cpu, cuda or cuda:N' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -l resume -d 'Continue the run in --out-dir from its last checkpoint'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -s q -l quiet -d 'Print only errors'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand train" -s h -l help -d 'Print help'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l pred -d 'Predicted label maps: a NIfTI file (.nii, .nii.gz) or a directory of them (not searched recursively)' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l ref -d 'Reference label maps: a NIfTI file or a directory; a prediction pairs with the reference of the same file name' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l labels -d 'Label names: a CSV file with columns id,name (header optional) or a text file with lines `ID<TAB>name` or `ID name [...]`. Every label in it is evaluated in every case' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l spacing-from -d 'File whose affine gives the voxel spacing for distances and volumes' -r -f -a "ref\t''
pred\t''"
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -s o -l output -d 'Write the CSV to FILE (- for standard output). FILE is replaced only when every case succeeded; otherwise the rows go to FILE.partial' -r -F
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l threads -d 'Number of CPU threads (sets RAYON_NUM_THREADS; default: all logical CPUs)' -r
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -l keep-going -d 'Continue after a case fails; the exit status is then 1 if any case failed'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -s q -l quiet -d 'Print only errors on standard error (no progress, no summary)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand eval" -s h -l help -d 'Print help'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand help; and not __fish_seen_subcommand_from predict train eval help" -f -a "predict" -d 'Write a label map per scan and a CSV of label volumes'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand help; and not __fish_seen_subcommand_from predict train eval help" -f -a "train" -d 'Fine-tune SwinUNETR on labelled scans'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand help; and not __fish_seen_subcommand_from predict train eval help" -f -a "eval" -d 'Score label maps against reference label maps (Dice, HD95, volumes)'
complete -c prism-seg -n "__fish_prism_seg_using_subcommand help; and not __fish_seen_subcommand_from predict train eval help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
