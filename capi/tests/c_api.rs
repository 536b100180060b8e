//! The C ABI from C: programs under `tests/c/` compiled with the system C compiler against
//! `include/dsr.h` (C11, every warning an error) and linked to the `libdsr.so` this package
//! builds, then run. Set `DSR_VALGRIND=1` to run each under valgrind's memcheck as well (with
//! positioned reads, `DSR_IO_BACKEND=pread`: valgrind cannot see the kernel fill memory through
//! io_uring, and would call those bytes uninitialised).
//!
//! The Wine `dstorage.dll` (`wine/`) is built on the same `libdsr.so` and its Windows test
//! programs run under Wine here too (docs/wine.md).
//!
//! `cargo test` does not build a package's `cdylib` for its integration tests, so the first
//! test to need it runs `cargo build -p dsr-capi` (same profile and target directory; quick when
//! it is up to date).

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::{build_library, lib_dir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Compiles `tests/c/<name>.c` into `out`; `None` (having said why) where there is no C
/// compiler, unless `DSR_REQUIRE_TOOLS=1`.
fn compile(name: &str, out: &Path) -> Option<PathBuf> {
    compile_with(name, out, &[])
}

/// [`compile`], linking `libs` too.
fn compile_with(name: &str, out: &Path, libs: &[&str]) -> Option<PathBuf> {
    let lib = lib_dir();
    build_library(&lib);
    assert!(
        lib.join("libdsr.so").exists(),
        "libdsr.so is not in {} (cargo builds it with the tests)",
        lib.display()
    );
    let exe = out.join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-pthread"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg("-ldsr")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(libs)
        .output();
    match built {
        Err(err) if std::env::var("DSR_REQUIRE_TOOLS").as_deref() != Ok("1") => {
            eprintln!("skipped: no C compiler ({cc}: {err})");
            None
        }
        Err(err) => panic!("DSR_REQUIRE_TOOLS=1 but {cc} cannot run: {err}"),
        Ok(output) => {
            assert!(
                output.status.success(),
                "{name}.c does not compile:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(exe)
        }
    }
}

/// Runs a compiled test program (under valgrind with `DSR_VALGRIND=1`, on positioned reads);
/// returns its stdout.
fn run(exe: &Path, args: &[&str]) -> String {
    run_on(exe, args, true)
}

/// [`run`]; a program that needs io_uring (reads of a FIFO held in the kernel) says so with
/// `valgrind_ok` false, and runs without valgrind, which does not follow io_uring.
fn run_on(exe: &Path, args: &[&str], valgrind_ok: bool) -> String {
    let valgrind = valgrind_ok && std::env::var("DSR_VALGRIND").as_deref() == Ok("1");
    let mut command = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "-q",
        ])
        .arg(format!(
            "--suppressions={}",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/valgrind.supp")
                .display()
        ))
        .arg(exe)
        .env("DSR_IO_BACKEND", "pread");
        c
    } else {
        Command::new(exe)
    };
    let output = command.args(args).output().expect("the test program runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{stdout}\n{}",
        exe.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{stdout}");
    stdout
}

/// The test asset: text that compresses (`asset_byte` in `tests/c/common.h`).
fn asset(len: usize) -> Vec<u8> {
    let text = b"dsr streams assets from disk ";
    (0..len).map(|i| text[i % text.len()]).collect()
}

/// The first demo's program, built in `dir`, and its arguments: `dir` to write its asset in,
/// a GDeflate file of that asset, and the asset's length. `None` where it cannot be built.
fn first_demo(dir: &Path) -> Option<(PathBuf, [String; 3])> {
    let exe = compile("demo_assets", dir)?;
    let len = 3 << 20;
    let packed = dsr_gdeflate::compress(&asset(len), dsr_gdeflate::Level::DEFAULT).unwrap();
    let packed_path = dir.join("asset.gdf");
    std::fs::write(&packed_path, packed).unwrap();
    let args = [
        dir.to_str().unwrap().to_owned(),
        packed_path.to_str().unwrap().to_owned(),
        len.to_string(),
    ];
    Some((exe, args))
}

#[test]
fn the_seeds_first_demo_writes_an_asset_and_reads_it_raw_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let Some((exe, args)) = first_demo(dir.path()) else {
        return;
    };
    let out = run(&exe, &args.each_ref().map(|a| a.as_str()));
    assert!(out.contains("compressed:"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("asset.bin")).unwrap(),
        asset(3 << 20),
        "the written asset"
    );
}

/// `DSR_TRACE=PATH` makes libdsr write a timeline of what its engine ran (here the first demo's
/// reads and decodes) when the program destroys its queues and runtime; a path it cannot write
/// is said on stderr and fails nothing.
#[test]
fn dsr_trace_writes_a_timeline_of_a_c_programs_loads() {
    let dir = tempfile::tempdir().unwrap();
    let Some((exe, args)) = first_demo(dir.path()) else {
        return;
    };
    let trace = dir.path().join("trace.json");
    let output = Command::new(&exe)
        .args(&args)
        .env("DSR_TRACE", &trace)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).expect("the trace was written")).unwrap();
    let names: Vec<&str> = json["traceEvents"]
        .as_array()
        .expect("Chrome trace events")
        .iter()
        .filter(|e| e["ph"] == "X")
        .filter_map(|e| e["name"].as_str())
        .collect();
    for node in ["read", "decompress-cpu", "write"] {
        assert!(names.contains(&node), "the trace shows {node} nodes: {names:?}");
    }

    let unwritable = dir.path().join("no such directory/trace.json");
    let output = Command::new(&exe)
        .args(&args)
        .env("DSR_TRACE", &unwritable)
        .output()
        .unwrap();
    assert!(output.status.success(), "an unwritable trace fails nothing");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot write the trace"),
        "and is said: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_seeds_second_demo_reads_a_packed_file_at_many_offsets_with_an_error_callback() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = compile("packed_offsets", dir.path()) else {
        return;
    };
    let packed_path = dir.path().join("packed.bin");
    let bytes: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&packed_path, bytes).unwrap();
    let out = run(&exe, &[packed_path.to_str().unwrap()]);
    assert!(out.contains("the bad one failed with DSR_E_END_OF_FILE"), "{out}");
}

#[test]
fn queue_semantics_hold_through_the_c_abi() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = compile("semantics", dir.path()) else {
        return;
    };
    let out = run_on(&exe, &[dir.path().to_str().unwrap()], false);
    assert!(out.contains("cancelled by tag"), "{out}");
}

#[test]
fn hostile_calls_get_error_codes_never_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = compile("hostile", dir.path()) else {
        return;
    };
    let out = run(&exe, &[dir.path().to_str().unwrap()]);
    assert!(out.contains("every hostile call got an error code"), "{out}");
}

/// Whether a program that exited 77 ("no Vulkan device") may count as skipped: not when
/// `DSR_REQUIRE_VULKAN=1`.
fn vulkan_missing_may_skip(output: &std::process::Output) -> bool {
    if output.status.code() != Some(77) {
        return false;
    }
    assert!(
        std::env::var("DSR_REQUIRE_VULKAN").as_deref() != Ok("1"),
        "DSR_REQUIRE_VULKAN=1 but the C program found no Vulkan 1.2 device:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    eprintln!("skipped: no Vulkan 1.2 device (install mesa-vulkan-drivers for lavapipe)");
    true
}

#[test]
fn a_games_own_vulkan_device_buffer_and_timeline_through_the_c_abi() {
    let dir = tempfile::tempdir().unwrap();
    // The program needs the Vulkan headers and loader to build (Debian: libvulkan-dev).
    if !Path::new("/usr/include/vulkan/vulkan.h").exists() {
        assert!(
            std::env::var("DSR_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "DSR_REQUIRE_TOOLS=1 but the Vulkan headers are missing (install libvulkan-dev)"
        );
        eprintln!("skipped: no Vulkan headers (install libvulkan-dev)");
        return;
    }
    let Some(exe) = compile_with("vulkan", dir.path(), &["-lvulkan"]) else {
        return;
    };
    let len = (1 << 20) + 4321;
    let raw_path = dir.path().join("asset.bin");
    std::fs::write(&raw_path, asset(len)).unwrap();
    let packed = dsr_gdeflate::compress(&asset(len), dsr_gdeflate::Level::DEFAULT).unwrap();
    let packed_path = dir.path().join("asset.gdf");
    std::fs::write(&packed_path, packed).unwrap();
    let out_path = dir.path().join("written.bin");
    std::fs::write(&out_path, b"").unwrap();
    // Not under valgrind: the Vulkan driver's own allocations are its business.
    let output = Command::new(&exe)
        .args([&raw_path, &packed_path])
        .arg(len.to_string())
        .arg(&out_path)
        .output()
        .expect("the test program runs");
    if vulkan_missing_may_skip(&output) {
        return;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "vulkan.c failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{stdout}");
    assert!(stdout.contains("validation messages: 0"), "{stdout}");
    if std::env::var("DSR_REQUIRE_VULKAN").as_deref() == Ok("1") {
        assert!(stdout.contains("validation layer: on"), "{stdout}");
    }
    // The write took the decoded asset and the upload back out of the game's buffer.
    let written = std::fs::read(&out_path).unwrap();
    let upload: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(written.len(), len + upload.len());
    assert!(written[..len] == asset(len)[..], "the decoded asset, back from the GPU");
    assert!(written[len..] == upload[..], "the upload, back from the GPU");
}

/// A command to run, found on `PATH` or at one of `fallbacks`.
fn find_tool(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

/// `C:\...` or `Z:\...` for a path Wine sees through that drive.
fn windows_path(drive: char, relative: &Path) -> String {
    format!(
        "{drive}:\\{}",
        relative.to_string_lossy().trim_start_matches('/').replace('/', "\\")
    )
}

#[test]
fn the_wine_dstorage_dll_serves_a_windows_program() {
    // Wine (its loader and winegcc), mingw-w64 and make build and run it; the D3D12 test's
    // stand-in device needs the Vulkan headers, and an X server for Wine 8's Vulkan (Debian:
    // wine64, wine64-tools, gcc-mingw-w64-x86-64, make, libvulkan-dev, xvfb).
    let vulkan_headers = Path::new("/usr/include/vulkan/vulkan_core.h");
    let tools = [
        ("make", find_tool("make", &[])),
        ("winegcc", find_tool("winegcc", &["/usr/lib/wine/winegcc"])),
        ("x86_64-w64-mingw32-gcc", find_tool("x86_64-w64-mingw32-gcc", &[])),
        (
            "wine64",
            find_tool("wine64", &["/usr/lib/wine/wine64"]).or_else(|| find_tool("wine", &[])),
        ),
        ("Xvfb", find_tool("Xvfb", &[])),
        (
            "the Vulkan headers",
            vulkan_headers.exists().then(|| vulkan_headers.to_path_buf()),
        ),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("DSR_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "DSR_REQUIRE_TOOLS=1 but {missing:?} are missing (install wine64 wine64-tools gcc-mingw-w64-x86-64 make xvfb libvulkan-dev)"
        );
        eprintln!(
            "skipped: {missing:?} missing (install wine64 wine64-tools gcc-mingw-w64-x86-64 make xvfb libvulkan-dev)"
        );
        return;
    }
    let wine = tools[3].1.clone().expect("found above");
    let lib = lib_dir();
    build_library(&lib);
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    let winegcc_dir = tools[1].1.as_ref().and_then(|p| p.parent()).expect("a directory");
    let path = format!(
        "{}:{}",
        winegcc_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let made = Command::new("make")
        .arg("-C")
        .arg(root().join("wine"))
        .arg(format!("LIBDSR={}", lib.display()))
        .arg(format!("BUILD={}", build.display()))
        .env("PATH", &path)
        .output()
        .expect("make runs");
    assert!(
        made.status.success(),
        "make -C wine failed:\n{}\n{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    // Wine finds a builtin DLL through WINEDLLPATH once a file of its name is on the search
    // path: the ELF itself, beside the program (docs/wine.md).
    std::fs::copy(build.join("dstorage.dll.so"), build.join("dstorage.dll")).unwrap();

    // A prefix of our own, made once per target directory (wineboot takes seconds).
    let prefix = lib.parent().expect("the target directory").join("wine-prefix");
    let wine_env = |command: &mut Command| {
        command
            .env("WINEPREFIX", &prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLPATH", &build)
            .env("WINEDLLOVERRIDES", "dstorage=b;winemenubuilder.exe=d")
            .env_remove("DISPLAY");
    };
    if !prefix.join("system.reg").exists() {
        let mut boot = Command::new(&wine);
        boot.args(["wineboot", "-i"]);
        wine_env(&mut boot);
        assert!(
            boot.output().expect("wineboot runs").status.success(),
            "wineboot failed"
        );
    }

    // The asset on C: (inside the prefix) and on Z: (the temporary directory), and its stream.
    let len = (1 << 20) + 4321;
    let on_z = dir.path().join("asset.bin");
    std::fs::write(&on_z, asset(len)).unwrap();
    let c_dir = prefix.join("drive_c").join(format!("dsr-test-{}", std::process::id()));
    std::fs::create_dir_all(&c_dir).unwrap();
    std::fs::write(c_dir.join("asset.bin"), asset(len)).unwrap();
    let packed = dir.path().join("asset.gdf");
    std::fs::write(
        &packed,
        dsr_gdeflate::compress(&asset(len), dsr_gdeflate::Level::DEFAULT).unwrap(),
    )
    .unwrap();
    let c_path = windows_path('C', Path::new(&format!("dsr-test-{}/asset.bin", std::process::id())));
    let run_windows = |program: &str, args: &[String]| {
        let mut command = Command::new(&wine);
        command.arg(build.join(program)).args(args).current_dir(&build);
        wine_env(&mut command);
        let output = command.output().expect("wine runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{program} under Wine failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        eprint!("{stdout}");
        stdout
    };
    let layout = run_windows("layout.exe", &[]);
    assert!(layout.contains("layout matches DirectStorage's"), "{layout}");
    let out = run_windows(
        "queues.exe",
        &[
            c_path,
            windows_path('Z', &on_z),
            windows_path('Z', &packed),
            len.to_string(),
        ],
    );
    let _ = std::fs::remove_dir_all(&c_dir);
    assert!(out.contains("every check passed"), "{out}");

    // D3D12 buffer destinations, through a stand-in for vkd3d-proton on Wine's Vulkan, with the
    // validation layer loaded by the host's Vulkan loader beneath winevulkan, logging to a file.
    let display = Xvfb::start(tools[4].1.as_ref().expect("found above"));
    let log = dir.path().join("validation.log");
    let settings = dir.path().join("vk_layer_settings.txt");
    std::fs::write(
        &settings,
        format!(
            "khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG\n\
             khronos_validation.log_filename = {}\n\
             khronos_validation.report_flags = error,warn\n",
            log.display()
        ),
    )
    .unwrap();
    let run_d3d12 = |extra: &[&str]| {
        let mut command = Command::new(&wine);
        command
            .arg(build.join("d3d12.exe"))
            .args([windows_path('Z', &on_z), windows_path('Z', &packed), len.to_string()])
            .args(extra)
            .current_dir(&build);
        wine_env(&mut command);
        command
            .env("DISPLAY", &display.name)
            .env("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation")
            .env("VK_LAYER_SETTINGS_PATH", &settings);
        command.output().expect("wine runs")
    };
    // First a known mistake, so a clean log below means the layer was there and found nothing.
    let provoked = run_d3d12(&["--provoke-validation"]);
    if vulkan_missing_may_skip(&provoked) {
        return;
    }
    assert!(
        provoked.status.success(),
        "{}",
        String::from_utf8_lossy(&provoked.stdout)
    );
    let caught = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        caught.contains("VUID-VkBufferCreateInfo-size"),
        "the validation layer did not report the invalid buffer (install vulkan-validationlayers): {caught}"
    );
    std::fs::remove_file(&log).unwrap();
    let output = run_d3d12(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "d3d12.exe under Wine failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{stdout}");
    assert!(stdout.contains("every check passed"), "{stdout}");
    let messages = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(messages.is_empty(), "validation messages:\n{messages}");
}

/// An X server for one test (Wine 8 reaches the host's Vulkan through its X11 driver), killed
/// when dropped.
struct Xvfb {
    child: std::process::Child,
    name: String,
}

impl Xvfb {
    fn start(program: &Path) -> Xvfb {
        use std::io::BufRead;
        // -displayfd: the server picks a free display and writes its number when ready.
        let mut child = Command::new(program)
            .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0", "640x480x24"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("Xvfb says its display");
        let number: u32 = line.trim().parse().expect("a display number");
        Xvfb {
            child,
            name: format!(":{number}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
