//! The specification's own example (HL7 SMART Health Cards and Links IG,
//! "Encrypting and Decrypting Files"): its key and the JWE its example
//! encryption printed, a SMART Health Card file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use vault_shl::{jwe, JweLimits, LinkKey, ShlError};

const SPEC_KEY: &str = "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q";

const SPEC_JWE: &str = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIiwiY3R5IjoiYXBwbGljYXRpb24vc21hcnQtaGVhbHRoLWNhcmQifQ..B9Bd5AW751az-gEx.iah6mxLb5TQe2ZfCwEUs4R1t8WoP0mnFc-TUzN1NIyzUeDwJNOcxv4CY8wV6ys4Dicnr3IhqTvVU1RbR-4eq1GCd4g96faV8_0MbHwXzP246Tz9BDLhQ2zlAjYqvvCi_JuWdyWqGhKeWGX1XibNHFzzVT0FmYensfKF4o0uSeZWQDKVEEhzMSKuALMpUkfwHcmCRfLT-ctANSxq-Zj0IIeT66XbztOomStjlfi-F-FaqBGZfHOARCVvT143CTYELLJCUdD4qUVkrNuLmRZrNuqVpY0g5BjABswkIoDmyoRJAEohuZCamZNA--p-uRqJjRefED1eMrKSppabV2ugaqoFlieujTOE-a3VKib9aC-lFsmLalkwh9ctr_FZqS9H46rqGjGcOxtAXalo1jkMPGupVsE1W-xIH14wbPCYcgfldH9SH7X60462kxD8OFdHpvnnfAvjQnaE4QDqasT5ySpBRtck4GVxs2IRBt62-kOlzoI8lHapLdwIms-Gdt7z38E47ZE3afE4IIbobPGz7wGvjbi3z234ARvGQ4jREgPQb1NRYAEtZlrZNzR6N7ofXD8jF502tw-QWI_Ox0jFP5tynIiMp-hG25ecQ0s4MzPHFC0ZABPamgg3MS-UILl76gMDCHS5Te_JAXZoC1HnkETw5M217SaG5ISAU0F5qETMREfTjZR9E45MDhnw7uY1vo2lffRB3ei1QqGuLh0gUnVU7TUfFYwcOqV15sb0t1lMj0mmyG5v-_dE9H6dYtRKJARltmdfSmc1HisBewx75Xh5ChJQ1hiCEDaZ1wqFjsFJ6SrKgJ7C1N7vx6QKx8YXwFH7ePG2qG39leT5JKZnqAvi9fqc6x-YwfhSjbRKGZoj2o55Fd2fbwtK6CXpiW6AekT7PUcl_7ynTq-DaQ_Yc29WwtmgapcCRNpfcMsoqCD4giu1V3Sj5DQLglwuk1gAMcuV5fo8JpABu2_is83WZ_GJ1WWMUxyZGq6u-EGuZrP96Yewb7-zfnt2lao_LJg1ef5cqDTW7-0MS27wkmLiIi0e-PYvS-UfWVHg1oNbR-MHXMVEQ6gqNg08IgEyPDSFCUbf75HuMILN80bQNtSlFj6FR7uNKHr8sigvKI80k.5flOKKmeqYm0TamwROr8Nw";

#[test]
fn decrypts_the_specification_example() {
    let key = LinkKey::from_base64url(SPEC_KEY).unwrap();
    let d = jwe::decrypt(&key, SPEC_JWE, &JweLimits::default()).unwrap();
    assert_eq!(d.content_type, "application/smart-health-card");
    assert!(!d.compressed);
    let v: serde_json::Value = serde_json::from_slice(&d.plaintext).unwrap();
    let vc = v["verifiableCredential"].as_array().unwrap();
    assert_eq!(vc.len(), 1);
    // The specification prints the start of the card's JWS.
    assert!(vc[0]
        .as_str()
        .unwrap()
        .starts_with("eyJ6aXAiOiJERUYiLCJhbGciOiJFUzI1NiIsImtpZCI6IjNLZmRnLVh3UC03Z1h5eXd0VWZVQUR3QnVtRE9QS01ReC1pRUxMMTFX"));
    let h = jwe::inspect(SPEC_JWE, &JweLimits::default()).unwrap();
    assert_eq!((h.alg.as_str(), h.enc.as_str()), ("dir", "A256GCM"));
}

#[test]
fn the_example_with_one_bit_changed_is_refused() {
    let key = LinkKey::from_base64url(SPEC_KEY).unwrap();
    // Change one character of the ciphertext (the fourth part).
    let mut parts: Vec<String> = SPEC_JWE.split('.').map(String::from).collect();
    let ct = &mut parts[3];
    let first = if ct.starts_with('a') { "b" } else { "a" };
    ct.replace_range(0..1, first);
    let altered = parts.join(".");
    assert_eq!(
        jwe::decrypt(&key, &altered, &JweLimits::default()),
        Err(ShlError::Decrypt)
    );
}
