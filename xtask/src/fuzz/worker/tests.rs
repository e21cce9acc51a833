use super::*;

#[test]
fn bounded_catches_panics_hangs_and_big_allocations() {
    // Timing margins for a loaded machine: the cases that must finish get a minute (they
    // take milliseconds), the hang is a sleep of two minutes against a deadline of one
    // second, so neither outcome can be reached by slowness alone.
    let d = Duration::from_secs(60);
    assert!(matches!(bounded(d, || panic!("boom")), Err(Failure::Panic(m)) if m.contains("boom")));
    // A panic a library catches still counts.
    let caught = bounded(d, || std::panic::catch_unwind(|| panic!("inner")).is_err());
    assert!(matches!(caught, Err(Failure::Panic(m)) if m.contains("caught")));
    assert!(matches!(
        bounded(Duration::from_secs(1), || std::thread::sleep(
            Duration::from_secs(120)
        )),
        Err(Failure::Hang)
    ));
    let big = bounded(d, || vec![1u8; MAX_ALLOCATION + 1].len());
    assert!(matches!(big, Err(Failure::Allocation(n)) if n > MAX_ALLOCATION));
    // Many allocations under the single-request cap, together over the live cap.
    let rounds = MAX_LIVE / (16 << 20) + 2;
    let many = bounded(d, move || {
        let v: Vec<Vec<u8>> = (0..rounds).map(|_| vec![1u8; 16 << 20]).collect();
        v.len()
    });
    assert!(matches!(many, Err(Failure::Memory(n)) if n > MAX_LIVE));
    // What a case freed is not held against the next one: the same bytes, each freed
    // before the next, pass. The peak is the process's, and the other tests of this
    // binary run beside this one, so the bound is the cap itself, not the 16 MiB this
    // case holds (counting no frees would give `rounds` x 16 MiB, over the cap).
    let freed = bounded(d, move || {
        for _ in 0..rounds {
            drop(std::hint::black_box(vec![1u8; 16 << 20]));
        }
    });
    assert!(
        matches!(freed, Ok(((), m)) if m.peak <= MAX_LIVE),
        "{:?}",
        freed.as_ref().map(|r| r.1).ok()
    );
    assert!(matches!(bounded(d, || 7), Ok((7, _))));
}

#[test]
fn errors_are_normalised_without_places_and_numbers() {
    assert_eq!(
        normalise("`/tmp/x.img` partition 2 /a/b: corrupt: bad extent header (12 entries)"),
        "corrupt: bad extent header (# entries)"
    );
}

#[test]
fn mutations_round_trip_through_their_description() {
    for m in [
        Mutation::Flip { at: 5, bit: 3 },
        Mutation::Write {
            at: 9,
            bytes: vec![0xde, 0xad],
        },
        Mutation::Copy {
            from: 1,
            at: 2,
            len: 3,
        },
    ] {
        let back = parse_mutation(&describe(&m)).unwrap();
        assert_eq!(describe(&back), describe(&m));
    }
}
