"""What runs inside the sandbox: the lock-down (:mod:`.jail`), loading the submission
(:mod:`.load`), running the tests (:mod:`.run`) and the wire format (:mod:`.wire`).
Standard library and NumPy only (SymPy too, imported by a rule exercise's tests): this
package is copied into the child's scratch folder and never imports bpcheck."""
