//! Temporary reference versions of the 3-D operations; replaced by the optimized module.
use candle_core::{DType, Result, Tensor, D};

pub fn conv3d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, _, _, _) = x.dims5()?;
    let (o, _, k, _, _) = w.dims5()?;
    let mut x = x.clone();
    for d in 2..5 {
        x = x.pad_with_zeros(d, padding, padding)?;
    }
    let (_, _, dp, hp, wp) = x.dims5()?;
    let (od, oh, ow) = ((dp - k) / stride + 1, (hp - k) / stride + 1, (wp - k) / stride + 1);
    let mut cols = Vec::new();
    for a in 0..k {
        for b in 0..k {
            for e in 0..k {
                let s = x.narrow(2, a, (od - 1) * stride + 1)?.narrow(3, b, (oh - 1) * stride + 1)?.narrow(4, e, (ow - 1) * stride + 1)?;
                let s = if stride > 1 {
                    let s = s.pad_with_zeros(2, 0, stride - 1)?.pad_with_zeros(3, 0, stride - 1)?.pad_with_zeros(4, 0, stride - 1)?;
                    s.reshape(vec![n, c, od, stride, oh, stride, ow, stride])?.narrow(3, 0, 1)?.narrow(5, 0, 1)?.narrow(7, 0, 1)?.reshape((n, c, od, oh, ow))?
                } else {
                    s
                };
                cols.push(s.contiguous()?);
            }
        }
    }
    let cols = Tensor::stack(&cols, 2)?.reshape((n, c * k * k * k, od * oh * ow))?;
    let wm = w.reshape((o, c * k * k * k))?;
    let y = wm.broadcast_left(n)?.matmul(&cols)?.reshape((n, o, od, oh, ow))?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1, 1))?),
        None => Ok(y),
    }
}

pub fn layer_norm(x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(w)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

pub fn instance_norm3d(x: &Tensor, eps: f64) -> Result<Tensor> {
    let (n, c, d, h, w) = x.dims5()?;
    let f = x.reshape((n, c, d * h * w))?;
    layer_norm(&f, None, None, eps)?.reshape((n, c, d, h, w))
}

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    let _ = DType::F32;
    x.maximum(&(x * slope)?)
}
